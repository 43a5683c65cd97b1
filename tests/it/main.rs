mod send;
mod support;
