//! A minimal LTI 1.3 platform (an LMS's launch side), for tests, benchmarks
//! and the try-it page. Being written.
