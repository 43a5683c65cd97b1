//! Whether output may carry ANSI colour: `--color`, the terminal, and `NO_COLOR`.

use std::ffi::OsStr;

use super::ColorChoice;

/// `auto` colours only a terminal, and not when `NO_COLOR` is set to anything but the empty
/// string (no-color.org); `always` and `never` are the user's explicit word and win over both.
pub(crate) fn enabled(choice: ColorChoice, terminal: bool, no_color: Option<&OsStr>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && no_color.is_none_or(OsStr::is_empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_colours_only_a_terminal_without_no_color() {
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
            (ColorChoice::Always, true, set, true),
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
