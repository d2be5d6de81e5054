//! The capture daemon: the only crate that touches the kernel.
pub mod doctor;
