//! Manifest files (CSV, TOML) into validated orders.
