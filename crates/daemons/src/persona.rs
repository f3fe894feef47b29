//! AI personas: users whose replies are generated, with bounded long-running state.

pub mod state;
