pub mod demo;
pub mod edge;
