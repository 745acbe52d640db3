//! The convolutions of the IB-INN's MNIST subnets, for the timing examples (`conv_grads`,
//! `conv_flex`, `conv_groups`): `(c_in, c_out, size, kernel)`, 24 of each per training step,
//! batch 128.
//! Not an example itself (cargo takes `examples/*.rs` and `examples/*/main.rs`).

pub type ConvShape = (usize, usize, usize, usize);

pub const IBINN_CONVS: [ConvShape; 6] = [
    (2, 32, 14, 3),
    (32, 32, 14, 3),
    (8, 64, 7, 3),
    (64, 64, 7, 3),
    (32, 4, 14, 1),
    (64, 16, 7, 1),
];
