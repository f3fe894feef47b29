//! The provider adapters behind the [`crate::Registry`]: one file per wire format, all speaking
//! [`adapter::Adapter`].

pub mod adapter;
pub mod anthropic;
mod http;
pub mod openai;
pub mod retrieval;
