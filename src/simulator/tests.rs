//! End-to-end tests: a real simulator on 127.0.0.1:0 and a real HTTP client.
