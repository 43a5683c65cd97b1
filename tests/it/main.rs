mod campaign;
mod faults;
mod manifest;
mod send;
mod support;
