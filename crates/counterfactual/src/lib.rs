//! Counterfactual explainers behind one [`Explainer`] trait: ECINN (closed-form, one forward and
//! one inverse pass of a conditional INN) and the iterative baselines GB (Wachter et al.) and GL
//! (Looveren & Klaise, prototype-guided) that explain a CNN, and gradient ascent in a flow's latent
//! space (diffeomorphic counterfactuals) or on the pixels; and heatmaps behind one
//! [`attribution::Attribution`] trait: ECINNh and the gradient attributions it is compared with.
//!
//! Images are unit-space `[N, C, H, W]` tensors everywhere (see `cfx_classifiers`); a request is
//! a batch of inputs plus a list of [`Query`]s, so one input can be sent to many targets without
//! being processed twice.

pub mod attribution;
pub mod c3lt;
mod diffeo;
mod ecinn;
mod error;
mod explainer;
mod gb;
mod gl;
mod input_optim;
mod inversion;

#[cfg(test)]
mod baseline_tests;

pub use c3lt::{C3lt, C3ltMaps, C3ltWeights};
pub use diffeo::{AscentOutput, AscentSpace, Diffeo, DiffeoConfig, LatentModel};
pub use ecinn::{
    Alpha1Rule, AlphaChoice, ClassMeans, ClassMeansBuilder, DeltaMeans, Ecinn, EcinnOutput,
    EcinnPixels, MeansCacheKey, alpha0, alpha1, pixels_out_of_range,
};
pub use error::ExplainError;
pub use explainer::{Explainer, Explanation, Miss, Query, TargetClass, check_queries, timed};
pub use gb::{Gb, GbConfig};
pub use gl::{Gl, GlConfig, class_prototypes};
pub use inversion::{InversionConfig, find_z, find_z_from};

#[cfg(test)]
pub(crate) mod test_util {
    use std::sync::Mutex;

    use burn::prelude::Backend;

    pub type TB = burn::backend::Flex;
    pub type TAd = burn::backend::Autodiff<TB>;

    static RNG: Mutex<()> = Mutex::new(());

    /// Runs `f` with the backend RNG seeded with `seed`. The RNG is process-wide and tests run on
    /// parallel threads: seeding and drawing under one lock keeps each test's draws its own.
    pub fn seeded<T>(seed: u64, f: impl FnOnce() -> T) -> T {
        let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
        TB::seed(&Default::default(), seed);
        f()
    }

    /// `m` with every parameter drawn now. burn initialises parameters lazily, on first use;
    /// a model built inside [`seeded`] but first used outside it would draw its weights from the
    /// shared RNG while another test holds the lock, changing that test's draws too.
    pub fn initialised<B: Backend, M: burn::module::Module<B>>(m: M) -> M {
        struct Touch;
        impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
            fn visit_float<const D: usize>(
                &mut self,
                param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
            ) {
                let _ = param.val();
            }
        }
        m.visit(&mut Touch);
        m
    }

    /// A decoder small enough for unit tests whose images still vary strongly with `z`:
    /// `sigmoid(4·(W z + b))` as a `[1, 28, 28]` image. It has no encoder, so the latent
    /// explainers must invert it by optimisation.
    #[derive(burn::module::Module, Debug)]
    pub struct LinearGenerator<B: Backend> {
        map: burn::nn::Linear<B>,
    }

    impl<B: Backend> LinearGenerator<B> {
        pub fn new(latent_dim: usize, device: &B::Device) -> Self {
            initialised(Self {
                map: burn::nn::LinearConfig::new(latent_dim, 28 * 28).init(device),
            })
        }
    }

    impl<B: Backend> cfx_generative::LatentGenerator<B> for LinearGenerator<B> {
        fn latent_dim(&self) -> usize {
            self.map.weight.dims()[0]
        }

        fn image_shape(&self) -> [usize; 3] {
            [1, 28, 28]
        }

        fn decode(&self, z: burn::tensor::Tensor<B, 2>) -> burn::tensor::Tensor<B, 4> {
            let n = z.dims()[0];
            burn::tensor::activation::sigmoid(self.map.forward(z).mul_scalar(4.0))
                .reshape([n, 1, 28, 28])
        }

        fn encode(&self, _x: burn::tensor::Tensor<B, 4>) -> Option<burn::tensor::Tensor<B, 2>> {
            None
        }
    }
}
