//! Serializing lines (`json`), writing them somewhere (`sink`), the advice said with a
//! verdict (`advice`), and the view for people (`text`, rendered from the JSON lines).
pub mod advice;
mod fields;
pub mod json;
pub mod sink;
pub mod text;

/// Version of the line format. Bumped on any incompatible change to a line type.
pub const SCHEMA: &str = "sendsight/1";
