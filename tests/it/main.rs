mod dcv;
mod faults;
mod manifest;
mod send;
mod support;
