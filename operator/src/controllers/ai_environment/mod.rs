//! AiEnvironment controller.

pub mod render;
