//! The desktop's light or dark preference: the XDG desktop portal's
//! `org.freedesktop.appearance color-scheme` (1 dark, 2 light, 0 none), which GNOME, KDE and
//! others serve, else a dark GTK_THEME (`Adwaita:dark`); light when neither says.
//! The portal is asked once, with a short timeout, so a session without one does not hold the
//! window up.

use std::time::Duration;

use zbus::zvariant::OwnedValue;

const ASK_WITHIN: Duration = Duration::from_millis(500);

/// Whether the desktop prefers dark.
pub fn prefers_dark() -> bool {
    match portal_scheme() {
        Some(1) => true,
        Some(2) => false,
        _ => gtk_theme_dark(std::env::var("GTK_THEME").ok().as_deref()),
    }
}

fn gtk_theme_dark(theme: Option<&str>) -> bool {
    theme.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.ends_with(":dark") || t.ends_with("-dark")
    })
}

fn portal_scheme() -> Option<u32> {
    let bus = zbus::blocking::connection::Builder::session()
        .ok()?
        .method_timeout(ASK_WITHIN)
        .build()
        .ok()?;
    // ReadOne (version 2 of the interface) answers the value; Read, older, a variant in it.
    let ask = |method: &str| {
        bus.call_method(
            Some("org.freedesktop.portal.Desktop"),
            "/org/freedesktop/portal/desktop",
            Some("org.freedesktop.portal.Settings"),
            method,
            &("org.freedesktop.appearance", "color-scheme"),
        )
        .ok()
        .and_then(|reply| reply.body().deserialize::<OwnedValue>().ok())
    };
    let v = ask("ReadOne").or_else(|| ask("Read"))?;
    match &*v {
        zbus::zvariant::Value::Value(inner) => u32::try_from(&**inner).ok(),
        other => u32::try_from(other).ok(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dark_gtk_theme_is_dark_and_anything_else_light() {
        assert!(super::gtk_theme_dark(Some("Adwaita:dark")));
        assert!(super::gtk_theme_dark(Some("Arc-Dark")));
        assert!(!super::gtk_theme_dark(Some("Adwaita")));
        assert!(!super::gtk_theme_dark(None));
    }
}
