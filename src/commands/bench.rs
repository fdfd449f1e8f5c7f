//! `partkeeper bench`: measures the table, prints the results (or, with `--compare`, the
//! before/after table), and writes the `--save` JSON and the `--chart` SVG.

use std::path::Path;

use chrono::Utc;

use crate::bench::chart::{self, Group};
use crate::bench::report::{self, BenchReport, Table, FORMAT_VERSION};
use crate::cli::{BenchArgs, BenchFormat};
use crate::config::Config;
use crate::error::{Error, Result};

pub async fn run(cfg: Config, args: BenchArgs) -> Result<i32> {
    if args.runs == 0 {
        return Err(Error::Usage(
            "--runs 0 measures nothing; give at least 1 (the default is 5)".into(),
        ));
    }
    if args.chart.is_some() && args.compare.is_none() {
        return Err(Error::Usage(
            "--chart draws a before/after comparison; give --compare FILE (saved earlier with --save) too".into(),
        ));
    }
    let policy = cfg.select_tables(Some(&args.table))?.remove(0);
    let before = args.compare.as_deref().map(load).transpose()?;
    let custom: Vec<_> = cfg
        .bench
        .iter()
        .filter(|q| q.table == policy.name)
        .collect();
    let mut conn = super::common::connect(&cfg).await?;
    let after = crate::bench::run(
        &mut conn,
        &policy,
        &custom,
        args.runs,
        before.as_ref().map(|b| b.parameters.clone()),
        Utc::now(),
    )
    .await?;
    if let Some(path) = &args.save {
        let json = serde_json::to_string_pretty(&after).unwrap_or_default();
        write(path, &(json + "\n"), "--save")?;
        eprintln!("saved the results to {}", path.display());
    }
    let table = match &before {
        Some(b) => report::compare(b, &after),
        None => report::single(&after),
    };
    print!("{}", render(&table, args.format));
    if let (Some(path), Some(b)) = (&args.chart, &before) {
        write(path, &chart_of(b, &after), "--chart")?;
        eprintln!("wrote the chart to {}", path.display());
    }
    Ok(0)
}

fn render(table: &Table, format: BenchFormat) -> String {
    match format {
        BenchFormat::Text => table.to_text(),
        BenchFormat::Markdown => table.to_markdown(),
    }
}

/// One group per class measured on both sides, in the order of the saved run.
fn chart_of(before: &BenchReport, after: &BenchReport) -> String {
    let groups: Vec<Group> = before
        .classes
        .iter()
        .filter_map(|b| {
            let a = after.classes.iter().find(|a| a.key == b.key)?;
            Some(Group {
                key: b.key.clone(),
                label: b.label.clone(),
                before_ms: b.execution_ms.median,
                after_ms: a.execution_ms.median,
            })
        })
        .collect();
    chart::render(
        &format!(
            "{}: {} vs {}",
            after.table,
            before.layout.describe(),
            after.layout.describe()
        ),
        &groups,
    )
}

/// Reads a file written by `--save`; a bad file is a usage error (exit 2, nothing measured).
fn load(path: &Path) -> Result<BenchReport> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Usage(format!(
            "cannot read --compare {}: {e}; give a file written by `partkeeper bench --save`",
            path.display()
        ))
    })?;
    let report: BenchReport = serde_json::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "--compare {} is not a saved bench result ({e}); give a file written by `partkeeper bench --save`",
            path.display()
        ))
    })?;
    if report.format != FORMAT_VERSION {
        return Err(Error::Usage(format!(
            "--compare {} has format {}, this partkeeper reads format {FORMAT_VERSION}; save it again with this version",
            path.display(),
            report.format
        )));
    }
    Ok(report)
}

fn write(path: &Path, contents: &str, flag: &str) -> Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| Error::Failed(format!("cannot write {flag} {}: {e}", path.display())))
}
