//! Command-line arguments of Stargate's programs, parsed with clap: `--help` and
//! `--version` end the process with 0, anything malformed is a usage error (129).

use crate::error::Error;

/// Parse `args` (without the program name) as the program `name`.
pub fn parse<P: clap::Parser>(name: &str, args: &[String]) -> Result<P, Error> {
    let argv = std::iter::once(name.to_owned()).chain(args.iter().cloned());
    P::try_parse_from(argv).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            let _ = e.print();
            std::process::exit(0);
        }
        _ => Error::Usage(e.to_string().trim_start_matches("error: ").trim_end().to_owned()),
    })
}
