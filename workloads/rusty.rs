// A Rust program for tracer's tests: `rusty N` makes N boxes of 1000 bytes from
// `make_boxes`, keeps them, and leaks them at exit.
use std::hint::black_box;

#[inline(never)]
fn make_boxes(n: usize) -> Vec<Box<[u8; 1000]>> {
    (0..n).map(|_| black_box(Box::new([7u8; 1000]))).collect()
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let boxes = make_boxes(n);
    black_box(&boxes);
    std::mem::forget(boxes);
}
