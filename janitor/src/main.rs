//! The `janitor` binary. The sweep itself is issue 5 and is not built yet; until then the
//! binary says so and fails, rather than pretending to have swept.

fn main() {
    eprintln!("error: the janitor is not implemented yet");
    std::process::exit(1);
}
