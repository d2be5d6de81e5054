//! Reading captures into an [`Analyzer`].

use std::path::PathBuf;

use crate::engine::{Analyzer, ReadStats};
use crate::{AnalyzeError, AnalyzeOptions};

/// Reads every capture in `paths` in time order and feeds the analyzer.
pub(crate) fn feed(
    paths: &[PathBuf],
    _opts: &AnalyzeOptions,
    _analyzer: &mut Analyzer,
) -> Result<ReadStats, AnalyzeError> {
    // Wired to retrace-replay's merged stream once it lands.
    Err(AnalyzeError::Capture {
        path: paths.first().cloned().unwrap_or_default(),
        message: "reading captures is not available yet in this build".into(),
    })
}
