//! `completions SHELL` and `man`: generated from the clap definitions, so they never fall
//! behind the flags.

use std::io::Write;

use clap::{Args, CommandFactory, ValueEnum};

use crate::exit::Exit;

use super::Cli;

pub(crate) const COMPLETIONS_ABOUT: &str = "Print a shell completion script to stdout.

  bash:        reissuer completions bash > ~/.local/share/bash-completion/completions/reissuer
  zsh:         reissuer completions zsh > ~/.zfunc/_reissuer   (with ~/.zfunc in $fpath)
  fish:        reissuer completions fish > ~/.config/fish/completions/reissuer.fish
  elvish:      reissuer completions elvish >> ~/.config/elvish/rc.elv
  powershell:  reissuer completions powershell >> $PROFILE";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<Exit> {
    use clap_complete::Shell as Target;
    let target = match args.shell {
        Shell::Bash => Target::Bash,
        Shell::Zsh => Target::Zsh,
        Shell::Fish => Target::Fish,
        Shell::Elvish => Target::Elvish,
        Shell::Powershell => Target::PowerShell,
    };
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(target, &mut command, "reissuer", &mut out);
    out.flush()?;
    Ok(Exit::Ok)
}

/// The man page of `reissuer` and, after it, a section per subcommand with its synopsis,
/// description and options (one page: `man reissuer` shows every flag).
pub(crate) fn man() -> anyhow::Result<Exit> {
    let mut command = Cli::command();
    // Building propagates the global flags and sets each subcommand's `reissuer NAME`.
    command.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        man.render_options_section(&mut part)?;
        let title = format!("REISSUER {}", sub.get_name().to_uppercase());
        page.extend_from_slice(format!(".SH \"{title}\"\n").as_bytes());
        page.extend_from_slice(demote_sections(&String::from_utf8_lossy(&part)).as_bytes());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&page)?;
    out.flush()?;
    Ok(Exit::Ok)
}

/// A subcommand's `.SH` sections become subsections of its own section.
fn demote_sections(roff: &str) -> String {
    roff.lines()
        .map(|line| match line.strip_prefix(".SH ") {
            Some(title) => format!(".SS {}\n", title.trim_matches('"')),
            None => format!("{line}\n"),
        })
        .collect()
}
