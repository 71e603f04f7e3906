//! The tail view: state update rate and frame render (issue 5).

fn main() {}
