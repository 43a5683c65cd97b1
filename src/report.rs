//! The report: one row per order, as CSV or JSON, in the contract's columns.

use std::io::Write;

use crate::journal::ItemRow;

/// The contract's columns, in order, then the two `collect` fills in, then the run whose
/// success a skipped order stands for.
pub const COLUMNS: [&str; 13] = [
    "order_id",
    "state",
    "attempts",
    "http_status",
    "error_code",
    "error_message",
    "request_id",
    "certificate_id",
    "dcv_random_value",
    "line",
    "issue_status",
    "certificate_file",
    "from_run",
];

pub fn write_csv(rows: &[ItemRow], out: impl Write) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(COLUMNS)?;
    for row in rows {
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        writer.write_record([
            row.order_id.to_string(),
            row.state.clone(),
            row.attempts.to_string(),
            opt(row.http_status),
            row.error_code.clone().unwrap_or_default(),
            row.error_message.clone().unwrap_or_default(),
            opt(row.request_id),
            opt(row.certificate_id),
            row.dcv_random_value.clone().unwrap_or_default(),
            row.line.to_string(),
            row.issue_status.clone().unwrap_or_default(),
            row.certificate_file.clone().unwrap_or_default(),
            opt(row.from_run),
        ])?;
    }
    writer.flush()?;
    Ok(())
}

pub fn write_json(rows: &[ItemRow], mut out: impl Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut out, rows)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ItemRow {
        ItemRow {
            order_id: 5,
            state: "failed".into(),
            attempts: 1,
            http_status: Some(404),
            error_code: Some("not_found|order".into()),
            error_message: Some("Order not found, sorry".into()),
            request_id: None,
            certificate_id: None,
            dcv_random_value: None,
            line: 3,
            issue_status: None,
            certificate_file: None,
            from_run: None,
        }
    }

    #[test]
    fn csv_has_the_contract_columns_in_order() {
        let mut out = Vec::new();
        write_csv(&[row()], &mut out).expect("csv");
        let text = String::from_utf8(out).expect("utf8");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "order_id,state,attempts,http_status,error_code,error_message,request_id,certificate_id,dcv_random_value,line,issue_status,certificate_file,from_run"
            )
        );
        assert_eq!(
            lines.next(),
            Some("5,failed,1,404,not_found|order,\"Order not found, sorry\",,,,3,,,")
        );
    }

    #[test]
    fn json_objects_have_the_same_keys() {
        let mut out = Vec::new();
        write_json(&[row()], &mut out).expect("json");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("parses");
        let keys: Vec<&str> = value[0]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = COLUMNS.to_vec();
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
    }
}
