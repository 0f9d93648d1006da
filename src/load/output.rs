//! Where a run's report goes, the one place a renderer is chosen: the text summary (`summary`)
//! on stdout, and the JSON or the HTML page (`report_html`) in the file the plan names.

use super::plan::ReportFile;
use super::report::Report;

/// Creates (or empties) the report file before the run, so that an unwritable path is bad input
/// found at once rather than after the whole run.
pub fn prepare(file: &ReportFile) -> Result<(), String> {
    let (ReportFile::Json(path) | ReportFile::Html(path)) = file;
    std::fs::File::create(path)
        .map(drop)
        .map_err(|e| format!("cannot write the report to {}: {e}", path.display()))
}

/// Prints the summary, then writes the report to `file` (when the plan names one), as JSON or
/// HTML by the file's extension.
pub fn publish(report: &Report, file: Option<&ReportFile>) -> Result<(), String> {
    print!("{}", super::summary::text(report));
    let Some(file) = file else { return Ok(()) };
    let (path, content) = match file {
        ReportFile::Json(path) => (
            path,
            serde_json::to_string_pretty(report).map_err(|e| e.to_string())?,
        ),
        ReportFile::Html(path) => (path, super::report_html::page(report)),
    };
    std::fs::write(path, content)
        .map_err(|e| format!("cannot write the report to {}: {e}", path.display()))
}
