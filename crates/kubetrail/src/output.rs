//! Output formats shared by the commands.

use clap::ValueEnum;

/// `--format` of every command that prints for people or for machines: `table` for people (`text` is the
/// same), `json` (one object per line) for machines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
}

/// `--format` of the commands whose answer is rows: [`Format`]'s, and `csv` (formulas defused, see
/// [`kubetrail_runtime::text::csv_field`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum RowFormat {
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
    Csv,
}
