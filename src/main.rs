use clap::Parser;

fn main() {
    let cli = gitopsd::cli::Cli::parse();
    std::process::exit(gitopsd::cli::main(cli));
}
