mod faults;
mod send;
mod support;
