fn main() {
    std::process::exit(gavel::cli::main());
}
