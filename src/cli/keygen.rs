//! `keygen MANIFEST --out DIR`: a fresh private key and CSR per order, and a new manifest that
//! points at the CSRs, ready for `run`. No network, no journal; key material goes only into the
//! `.key` files, never to stdout, stderr or a log.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::campaign::keygen::{self, KeyType};
use crate::exit::Exit;
use crate::manifest::{self, LoadOptions, Purpose, Row};

/// `keygen --help`: what it writes and what it promises.
pub(crate) const LONG_ABOUT: &str =
    "Generate a private key and CSR per order of a manifest, and a new \
manifest that uses them.

MANIFEST needs only what a key and CSR need: order_id and the names (common_name, dns_names). \
What the reissue itself requires, such as signature_hash, is checked when DIR/manifest.csv is \
validated or run; here each value given is only checked to be readable, and a csr or csr_file \
already given is not read.

For each order the CSR's subject CN is the order's common_name (or its first dns_name); its DNS \
names are dns_names, plus the CN when that is a host name. Writes DIR/<order_id>.key (PKCS#8 PEM, \
mode 0600), DIR/<order_id>.csr and DIR/manifest.csv: every field of MANIFEST and of --set kept, \
csr_file = <order_id>.csr. Nothing in DIR is overwritten without --force: when any of those files \
exists, nothing is written at all. Then send with `reissuer run DIR/manifest.csv`.

With --fill-from-order, orders that name no common_name, dns_names, server_platform.id or \
signature_hash take them from the live order (GET /order/certificate/{id}, through the rate \
limiter, kept in the journal); the new manifest then carries them explicitly.

Private keys are written to the .key files only: never to the terminal, a log or the journal.";

/// `keygen MANIFEST --out DIR [--key-type TYPE] [--force] [--set PATH=VALUE]...`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The manifest: a .csv or .toml file of orders. Rows need no CSR; any CSR given is replaced.
    pub manifest: PathBuf,

    /// Where the keys, CSRs and the new manifest go (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The kind of key to generate.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::EcdsaP256)]
    pub key_type: KeyTypeArg,

    /// Replace key, CSR and manifest files already in DIR.
    #[arg(long)]
    pub force: bool,

    /// A default for every order that does not set PATH, e.g. --set signature_hash=sha256; it is
    /// written into the new manifest.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub defaults: Vec<String>,

    /// Take unset names, platform and signature hash from each live order (needs the API key;
    /// the lookups count against --rate and are kept in the journal).
    #[arg(long)]
    pub fill_from_order: bool,

    #[command(flatten)]
    pub connection: super::ConnectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyTypeArg {
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    #[value(name = "ecdsa-p384")]
    EcdsaP384,
    #[value(name = "rsa-2048")]
    Rsa2048,
    #[value(name = "rsa-3072")]
    Rsa3072,
    #[value(name = "rsa-4096")]
    Rsa4096,
}

impl From<KeyTypeArg> for KeyType {
    fn from(arg: KeyTypeArg) -> Self {
        match arg {
            KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
            KeyTypeArg::EcdsaP384 => KeyType::EcdsaP384,
            KeyTypeArg::Rsa2048 => KeyType::Rsa2048,
            KeyTypeArg::Rsa3072 => KeyType::Rsa3072,
            KeyTypeArg::Rsa4096 => KeyType::Rsa4096,
        }
    }
}

/// `keygen MANIFEST --out DIR`.
pub(crate) fn keygen(journal: &Path, args: &KeygenArgs) -> anyhow::Result<Exit> {
    let opts = LoadOptions {
        defaults: args.defaults.clone(),
        // Any CSR the manifest holds is about to be replaced, so whether its names match is moot.
        allow_cn_mismatch: true,
        today: time::OffsetDateTime::now_utc().date(),
        fill_from_order: args.fill_from_order,
        // A key and CSR need an order id and names; the reissue's own rules are checked when
        // the manifest keygen writes is run.
        purpose: Purpose::NewKey,
    };
    let file = args.manifest.display().to_string();
    let mut orders = Vec::new();
    let mut invalid = Vec::new();
    manifest::scan(&args.manifest, &opts, |row| {
        match row {
            Row::Valid(order) => orders.push(order),
            Row::Invalid(row) => invalid.push(row),
        }
        ControlFlow::Continue(())
    })?;
    if !invalid.is_empty() {
        let mut errors = io::stderr().lock();
        let mut count = 0;
        for error in invalid.iter().flat_map(|row| &row.errors) {
            count += 1;
            writeln!(errors, "{error}")?;
        }
        writeln!(
            errors,
            "{file}: {count} {} in {} of {} orders; nothing was written",
            if count == 1 { "error" } else { "errors" },
            invalid.len(),
            invalid.len() + orders.len()
        )?;
        return Ok(Exit::Usage);
    }
    anyhow::ensure!(!orders.is_empty(), "{file} has no orders");
    if args.fill_from_order {
        fill_from_orders(journal, &args.connection, &mut orders)?;
    }
    let planned = keygen::plan(&file, orders)?;
    let key_type = KeyType::from(args.key_type);
    let written = keygen::write_campaign(&args.out, &planned, key_type, args.force)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "wrote {} {key_type} private keys (mode 0600) and their CSRs to {}",
        written.keys,
        args.out.display()
    )?;
    writeln!(
        out,
        "new manifest: {} (the orders of {file}, csr_file = <order_id>.csr)",
        written.manifest.display()
    )?;
    let unhashed = planned
        .iter()
        .filter(|p| {
            p.order
                .body
                .pointer("/certificate/signature_hash")
                .is_none()
        })
        .count();
    if unhashed > 0 {
        writeln!(
            out,
            "note: {unhashed} of {} orders have no signature_hash, which the reissue requires: \
             add it to the manifest or run with --set signature_hash=sha256 (or sha384, sha512)",
            planned.len()
        )?;
    }
    writeln!(out, "next: reissuer run {}", shell_word(&written.manifest))?;
    out.flush()?;
    Ok(Exit::Ok)
}

/// Fills each order's unset fields from its live order, fetched under the limiter.
fn fill_from_orders(
    journal: &Path,
    connection: &super::ConnectionArgs,
    orders: &mut [manifest::Order],
) -> anyhow::Result<()> {
    use crate::campaign::fill;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let connection = super::send::Connection::new(connection, None)?;
        let journal = crate::journal::Journal::open(journal).await?;
        if let Err(err) = connection.identify(&journal).await {
            journal.close().await;
            return Err(err);
        }
        let wanted: Vec<u64> = orders
            .iter()
            .filter(|order| fill::needs_facts(&order.body))
            .map(|order| order.order_id)
            .collect();
        let facts = fill::facts_for(
            &wanted,
            &connection.client,
            &connection.limiter,
            &journal,
            connection.concurrency,
        )
        .await;
        journal.close().await;
        let facts = facts?;
        let mut problems = Vec::new();
        for order in orders.iter_mut() {
            match facts.get(&order.order_id) {
                Some(Ok(facts)) => fill::fill(&mut order.body, facts),
                Some(Err(why)) => problems.push(format!("order {}: {why}", order.order_id)),
                None => {}
            }
        }
        anyhow::ensure!(
            problems.is_empty(),
            "{}; nothing was written",
            problems.join("; ")
        );
        Ok(())
    })
}

/// The path as one shell word, so the printed next command can be pasted as is.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-+:,@%".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_spaces_or_quotes_are_quoted_for_the_shell() {
        assert_eq!(
            shell_word(Path::new("keys/manifest.csv")),
            "keys/manifest.csv"
        );
        assert_eq!(shell_word(Path::new("my keys/m.csv")), "'my keys/m.csv'");
        assert_eq!(shell_word(Path::new("it's/m.csv")), r"'it'\''s/m.csv'");
    }
}
