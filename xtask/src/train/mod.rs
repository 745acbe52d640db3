//! Training loops behind `cargo xtask train`.

pub mod c3lt;
pub mod density;
pub mod epochs;
pub mod gan;
pub mod ibinn;
pub mod optim;
pub mod parallel;
pub mod run;
pub mod suite;
pub mod supervised;
