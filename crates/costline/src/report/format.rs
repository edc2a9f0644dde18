//! How a report's answer is printed: an aligned table for people (the default), CSV (RFC 4180)
//! or JSON for spreadsheets and finance tools.
//!
//! The answer is read as ClickHouse's `TSVWithNamesAndTypes`, so each column keeps its
//! ClickHouse type. JSON writes integers and ratios as numbers and decimals (money) as strings:
//! most JSON readers (JavaScript, pandas, jq before 1.7) turn numbers into binary floating
//! point, which cannot hold a sum of `Decimal(38, 12)` costs exactly; a string keeps every
//! digit ClickHouse printed.

use anyhow::{bail, Context};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// `--format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns, then the SQL that produced them.
    #[default]
    Table,
    /// RFC 4180: a header line, CRLF line ends, fields quoted where needed.
    Csv,
    /// An array of objects, one per row, keys in column order.
    Json,
}

/// What a column holds, from its ClickHouse type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Integer,
    Float,
    Decimal,
    Text,
}

impl ColumnKind {
    fn of(clickhouse_type: &str) -> ColumnKind {
        if clickhouse_type.starts_with("UInt") || clickhouse_type.starts_with("Int") {
            ColumnKind::Integer
        } else if clickhouse_type.starts_with("Float") {
            ColumnKind::Float
        } else if clickhouse_type.starts_with("Decimal") {
            ColumnKind::Decimal
        } else {
            ColumnKind::Text
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
}

/// A query's answer: its columns, and each row's values as ClickHouse printed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<String>>,
}

impl Answer {
    /// Reads `TSVWithNamesAndTypes`: a line of names, a line of types, then one line per row.
    pub fn from_tsv(text: &str) -> anyhow::Result<Answer> {
        let mut lines = text.lines().map(|line| line.split('\t').map(unescape_tsv).collect::<Vec<_>>());
        let (Some(names), Some(types)) = (lines.next(), lines.next()) else {
            bail!("the answer has no header lines");
        };
        if names.len() != types.len() {
            bail!("the answer has {} column names but {} types", names.len(), types.len());
        }
        let columns: Vec<Column> = names
            .into_iter()
            .zip(&types)
            .map(|(name, clickhouse_type)| Column { name, kind: ColumnKind::of(clickhouse_type) })
            .collect();
        let rows: Vec<Vec<String>> = lines.collect();
        if let Some(row) = rows.iter().find(|row| row.len() != columns.len()) {
            bail!("a row has {} values for {} columns: {row:?}", row.len(), columns.len());
        }
        Ok(Answer { columns, rows })
    }

    /// The header and rows, for [`super::align`].
    pub fn lines(&self) -> Vec<Vec<String>> {
        let header = self.columns.iter().map(|c| c.name.clone()).collect();
        std::iter::once(header).chain(self.rows.iter().cloned()).collect()
    }

    pub fn to_csv(&self) -> anyhow::Result<String> {
        let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
        writer.write_record(self.columns.iter().map(|c| &c.name)).context("writing the CSV header")?;
        for row in &self.rows {
            writer.write_record(row).context("writing a CSV row")?;
        }
        let bytes = writer.into_inner().context("finishing the CSV")?;
        String::from_utf8(bytes).context("the CSV is not UTF-8")
    }

    pub fn to_json(&self) -> anyhow::Result<String> {
        let mut text = serde_json::to_string_pretty(self).context("writing the JSON")?;
        text.push('\n');
        Ok(text)
    }
}

/// An array of objects, keys in column order (a `serde_json::Map` would sort them).
impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Row<'a>(&'a [Column], &'a [String]);
        impl Serialize for Row<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (column, value) in self.0.iter().zip(self.1) {
                    map.serialize_entry(&column.name, &json_value(column.kind, value))?;
                }
                map.end()
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.rows.len()))?;
        for row in &self.rows {
            seq.serialize_element(&Row(&self.columns, row))?;
        }
        seq.end()
    }
}

/// Integers and floats as numbers (a float that is not finite as `null`), everything else,
/// decimals included, as the string ClickHouse printed.
fn json_value(kind: ColumnKind, value: &str) -> serde_json::Value {
    let number = match kind {
        ColumnKind::Integer => {
            value.parse::<i64>().map(Into::into).ok().or_else(|| value.parse::<u64>().map(Into::into).ok())
        }
        ColumnKind::Float => {
            return value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
        ColumnKind::Decimal | ColumnKind::Text => None,
    };
    number.map_or_else(|| serde_json::Value::String(value.to_string()), serde_json::Value::Number)
}

/// Undoes ClickHouse's TSV escaping (`\t`, `\n`, `\\`, `\'`, …).
fn unescape_tsv(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        let tsv = "tenant\tendpoint_tag\trequests\tcost_usd\tretry_ratio\n\
                   String\tString\tUInt64\tDecimal(38, 12)\tFloat64\n\
                   acme\tcheckout,\\\"v2\\\"\\t\\\\x\t18446744073709551615\t12.000000000001\t0.125\n\
                   it\\'s\tline\\nbreak\t0\t-0.500000000000\tnan\n";
        Answer::from_tsv(tsv).unwrap()
    }

    #[test]
    fn tsv_escapes_are_undone() {
        let answer = answer();
        assert_eq!(answer.rows[0][1], "checkout,\"v2\"\t\\x");
        assert_eq!(answer.rows[1][..2], ["it's", "line\nbreak"]);
        assert_eq!(answer.columns[3], Column { name: "cost_usd".into(), kind: ColumnKind::Decimal });
    }

    #[test]
    fn csv_quotes_what_needs_it_and_ends_lines_with_crlf() {
        assert_eq!(
            answer().to_csv().unwrap(),
            "tenant,endpoint_tag,requests,cost_usd,retry_ratio\r\n\
             acme,\"checkout,\"\"v2\"\"\t\\x\",18446744073709551615,12.000000000001,0.125\r\n\
             it's,\"line\nbreak\",0,-0.500000000000,nan\r\n"
        );
    }

    #[test]
    fn json_keeps_column_order_and_decimals_exact() {
        let value: serde_json::Value = serde_json::from_str(&answer().to_json().unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!([
                {"tenant": "acme", "endpoint_tag": "checkout,\"v2\"\t\\x", "requests": 18446744073709551615u64,
                 "cost_usd": "12.000000000001", "retry_ratio": 0.125},
                {"tenant": "it's", "endpoint_tag": "line\nbreak", "requests": 0, "cost_usd": "-0.500000000000",
                 "retry_ratio": null},
            ])
        );
        let text = answer().to_json().unwrap();
        let order: Vec<usize> = ["tenant", "endpoint_tag", "requests", "cost_usd", "retry_ratio"]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn an_empty_answer_is_a_header_or_an_empty_array() {
        let answer = Answer::from_tsv("day\ttotal\nDate\tUInt64\n").unwrap();
        assert_eq!(answer.to_csv().unwrap(), "day,total\r\n");
        assert_eq!(answer.to_json().unwrap(), "[]\n");
    }

    #[test]
    fn a_ragged_answer_is_refused() {
        let err = Answer::from_tsv("a\tb\nString\tString\nx\n").unwrap_err();
        assert!(err.to_string().contains("1 values for 2 columns"), "{err}");
    }
}
