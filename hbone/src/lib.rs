//! HBONE client and server.
