//! CertCentral on loopback: the test equipment behind `demo`, the tests and the benchmark.
