//! Small networks used inside coupling blocks.

mod batch_norm;
mod conv;
mod conv_grads;
mod coupling_net;
mod dropout2d;
mod fused_batch_norm;
mod init;
pub mod mode;
pub mod registry;
mod subnet;

pub use batch_norm::{
    BatchNormLayers, calibrate_batch_norm_step, finish_batch_norm_calibration,
    start_batch_norm_calibration, sync_running_statistics,
};
pub use cfx_linalg::batch_norm::{BatchNormStep, BatchNormStepOutput, BatchNormTrainFn};
pub use conv::{
    AutoConv2d, Conv2dFn, ConvStrategy, ConvTranspose2dFn, auto_conv2d, conv_strategy,
    conv_transpose2d_default, conv2d, conv2d_default, gemm_conv2d, register_auto_conv_transpose2d,
    register_gemm_conv2d, set_conv_strategy,
};
pub use conv_grads::{
    NARROW_PATCH, SHIFTED_MIN_PIXELS, WIDE_INPUT, conv2d_lean, register_auto_conv2d,
    register_auto_conv2d_with, ways,
};
pub use coupling_net::{CouplingNet, CouplingNetConfig};
pub use dropout2d::Dropout2d;
pub use fused_batch_norm::{
    PerChannel, register_batch_norm, register_fused_batch_norm, registered_batch_norm,
};
pub use init::{kaiming_normal, torch_default_bias};
pub use subnet::{ConvSubnet, ConvSubnetConfig, FcSubnet, FcSubnetConfig, register_subnet_input};
