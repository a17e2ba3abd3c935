//! The AT command layer of the GSM modems, sans-IO: [`lines`] frames the byte stream,
//! [`result`] classifies lines (final results, URCs), [`engine`] runs the command queue.

pub mod engine;
pub mod lines;
pub mod result;

pub use engine::{AtEngine, AtEvent, Command, Outcome, Response};
pub use lines::{Frame, LineSplitter};
pub use result::{ClccEntry, FinalResult, Urc};

#[cfg(test)]
mod transcript_tests;
