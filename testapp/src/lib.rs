//! Meshwork test application: an HTTP/1.1 server answering JSON that names its service,
//! version and pod, with failure injection (flags, request headers, admin endpoint), and
//! a client mode that summarises status codes and versions seen.
pub mod client;
pub mod faults;
pub mod server;
