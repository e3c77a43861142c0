//! What the operator tools share: one-line usage errors, as every gavel command gives, and
//! error lines that cannot panic.

/// A line to stderr. `std`'s `eprintln!` panics when stderr cannot be written (a closed pipe,
/// a full disk), which would end a tool with 101 instead of the exit code its run earned.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use clap::error::ErrorKind;
use clap::Parser;

/// Parse the command line; `--help` prints and exits 0, a bad flag prints one line and exits 2.
pub fn parse_args<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = e.print();
                std::process::exit(0);
            }
            _ => {
                // clap's first paragraph is the error itself (a list of missing flags spans
                // several lines); the tips and usage after it are dropped to keep one line.
                let text = e.to_string();
                let first: Vec<&str> = text
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                eprintln!("{}", first.join(" "));
                std::process::exit(2);
            }
        },
    }
}
