//! Glow's invertible 1×1 convolution with an SVD-parameterised weight (FastH), from `cfx-linalg`.

use burn::prelude::*;
use cfx_linalg::{InvConv1x1, LinalgBackend};

use crate::flow::Flow;

impl<B: LinalgBackend> Flow<B> for InvConv1x1<B> {
    fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>) {
        InvConv1x1::forward(self, x)
    }

    fn inverse(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        InvConv1x1::inverse(self, z)
    }
}

#[cfg(test)]
mod tests {
    use cfx_linalg::InvConv1x1Config;

    use crate::test_util::{TAd, random_on};
    use crate::testing::check_flow;

    #[test]
    fn invertible_with_the_brute_force_log_det() {
        let conv = InvConv1x1Config::new(4)
            .with_group(Some(3))
            .init::<TAd>(&Default::default());
        check_flow(&conv, random_on::<TAd, 4>([2, 4, 3, 3], 7), 1e-4, 1e-3);
    }
}
