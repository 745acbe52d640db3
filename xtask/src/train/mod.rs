//! Training loops behind `cargo xtask train`.

pub mod density;
pub mod ibinn;
pub mod optim;
pub mod progress;
pub mod run;
pub mod suite;
pub mod supervised;
