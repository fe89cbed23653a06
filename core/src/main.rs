use clap::Parser;

fn main() {
    rifle_core::logging::init();
    rifle_core::registry::install_panic_hook();
    let cli = rifle_core::cli::Cli::parse();
    match rifle_core::cli::main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            rifle_core::logging::line(&format!("error: {e:#}"));
            std::process::exit(1);
        }
    }
}
