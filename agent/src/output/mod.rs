//! Serializing lines (`json`) and writing them somewhere (`sink`).
pub mod advice;
pub mod json;
pub mod sink;

/// Version of the line format. Bumped on any incompatible change to a line type.
pub const SCHEMA: &str = "sendsight/1";
