mod campaign;
mod dcv;
mod faults;
mod keygen;
mod manifest;
mod send;
mod stops;
mod support;
