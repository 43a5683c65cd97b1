//! Whether output may carry ANSI colour: `--color`, the terminal, and `NO_COLOR`.

use std::ffi::OsStr;

use super::ColorChoice;

/// `NO_COLOR` set to anything but the empty string (no-color.org) means no colour, whatever
/// `--color` says: it is how a user, or a cron table, turns colour off for every program at
/// once, and a `--color always` left in a script or alias must not undo it. Otherwise `auto`
/// colours only a terminal, and `always` and `never` are the user's word.
pub(crate) fn enabled(choice: ColorChoice, terminal: bool, no_color: Option<&OsStr>) -> bool {
    if no_color.is_some_and(|value| !value.is_empty()) {
        return false;
    }
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_wins_over_every_choice_and_auto_colours_only_a_terminal() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        let table = [
            (ColorChoice::Auto, true, None, true),
            (ColorChoice::Auto, true, set, false),
            (ColorChoice::Auto, true, empty, true),
            (ColorChoice::Auto, false, None, false),
            (ColorChoice::Auto, false, set, false),
            (ColorChoice::Never, true, None, false),
            (ColorChoice::Always, false, None, true),
            (ColorChoice::Always, true, set, false),
            (ColorChoice::Always, false, set, false),
            (ColorChoice::Always, true, empty, true),
            (ColorChoice::Never, true, empty, false),
            (ColorChoice::Never, false, set, false),
        ];
        for (choice, terminal, no_color, expected) in table {
            assert_eq!(
                enabled(choice, terminal, no_color),
                expected,
                "{choice:?} terminal={terminal} NO_COLOR={no_color:?}"
            );
        }
    }
}
