#[cfg(feature = "wip")]
fn main() {
    use clap::Parser;
    let cli = gitopsd::cli::Cli::parse();
    std::process::exit(gitopsd::cli::main(cli));
}
#[cfg(not(feature = "wip"))]
fn main() {}
