//! fake_server
