//! `netintercept [-w FILE] [-f FILTER] [--] COMMAND [ARGS...]`

fn main() {
    std::process::exit(netintercept_core::cli::run(std::env::args_os().skip(1)));
}
