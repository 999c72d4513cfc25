//! Error helpers every part shares. Each module keeps its own `thiserror` enum; this only
//! renders one for logs.

/// `error: cause: cause`, for logs.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
