# Build, install and uninstall conntrack-tray.
#
#   make                      build (cargo, release)
#   sudo make install         install under PREFIX (default /usr/local); DESTDIR for staging
#   sudo make install-systemd also the helper's systemd unit, for headless machines
#   sudo make uninstall       remove exactly what install put there
#
# Nothing here downloads or installs other packages. The system configuration
# (/etc/conntrack-tray/config.toml) is never overwritten: a newer default goes beside it as
# config.toml.new; uninstall keeps it unless it is still the untouched default.

PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
DATADIR    ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
# polkit reads actions only from here, whatever the prefix.
POLKITDIR  ?= /usr/share/polkit-1/actions
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
CARGO      ?= cargo
TARGET     ?= target/release

APPLET  := $(TARGET)/conntrack-tray
HELPER  := $(TARGET)/conntrack-tray-helper
POLICY  := io.github.conntrack-tray.policy
SIZES   := 16 22 24 32 48 64 128 256
STATES  := monitoring alert paused error
# The tray state icons' PNG sizes (icons/render.sh), beside their SVGs.
STATE_SIZES := 16 22 24 32 48 64
HELPER_PATH := $(LIBEXECDIR)/conntrack-tray/conntrack-tray-helper

# Every file install writes (relative to DESTDIR), so uninstall removes exactly these.
FILES := $(BINDIR)/conntrack-tray \
	$(HELPER_PATH) \
	$(POLKITDIR)/$(POLICY) \
	$(DATADIR)/applications/conntrack-tray.desktop \
	$(DATADIR)/icons/hicolor/scalable/apps/conntrack-tray.svg \
	$(foreach s,$(SIZES),$(DATADIR)/icons/hicolor/$(s)x$(s)/apps/conntrack-tray.png) \
	$(foreach s,$(STATES),$(DATADIR)/icons/hicolor/scalable/status/conntrack-tray-$(s).svg) \
	$(foreach z,$(STATE_SIZES),$(foreach s,$(STATES),$(DATADIR)/icons/hicolor/$(z)x$(z)/status/conntrack-tray-$(s).png))

.PHONY: all install install-systemd uninstall files
all: $(APPLET) $(HELPER)

$(APPLET) $(HELPER):
	$(CARGO) build --release --workspace --locked

# The list of files install writes, one per line (the install test compares against it).
files:
	@for f in $(FILES) $(SYSCONFDIR)/conntrack-tray/config.toml; do echo "$$f"; done

install: $(APPLET) $(HELPER)
	install -D -m 0755 $(APPLET) $(DESTDIR)$(BINDIR)/conntrack-tray
	install -D -m 0755 $(HELPER) $(DESTDIR)$(HELPER_PATH)
	install -d $(DESTDIR)$(POLKITDIR)
	sed 's|/usr/local/libexec/conntrack-tray/conntrack-tray-helper|$(HELPER_PATH)|' polkit/$(POLICY) > $(DESTDIR)$(POLKITDIR)/$(POLICY)
	chmod 0644 $(DESTDIR)$(POLKITDIR)/$(POLICY)
	install -D -m 0644 desktop/conntrack-tray.desktop $(DESTDIR)$(DATADIR)/applications/conntrack-tray.desktop
	install -D -m 0644 icons/conntrack-tray.svg $(DESTDIR)$(DATADIR)/icons/hicolor/scalable/apps/conntrack-tray.svg
	for s in $(SIZES); do install -D -m 0644 icons/hicolor/$${s}x$${s}/apps/conntrack-tray.png \
		$(DESTDIR)$(DATADIR)/icons/hicolor/$${s}x$${s}/apps/conntrack-tray.png; done
	for s in $(STATES); do install -D -m 0644 icons/conntrack-tray-$$s.svg \
		$(DESTDIR)$(DATADIR)/icons/hicolor/scalable/status/conntrack-tray-$$s.svg; done
	for z in $(STATE_SIZES); do for s in $(STATES); do \
		install -D -m 0644 icons/hicolor/$${z}x$${z}/status/conntrack-tray-$$s.png \
		$(DESTDIR)$(DATADIR)/icons/hicolor/$${z}x$${z}/status/conntrack-tray-$$s.png; done; done
	install -d $(DESTDIR)$(SYSCONFDIR)/conntrack-tray
	if [ -e $(DESTDIR)$(SYSCONFDIR)/conntrack-tray/config.toml ]; then \
		install -m 0644 conf/conntrack-tray.toml $(DESTDIR)$(SYSCONFDIR)/conntrack-tray/config.toml.new; \
		echo "kept $(SYSCONFDIR)/conntrack-tray/config.toml; the new default is config.toml.new"; \
	else \
		install -m 0644 conf/conntrack-tray.toml $(DESTDIR)$(SYSCONFDIR)/conntrack-tray/config.toml; \
	fi

install-systemd: install
	install -d $(DESTDIR)$(SYSTEMDDIR)
	sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|' conf/conntrack-tray-helper.service > $(DESTDIR)$(SYSTEMDDIR)/conntrack-tray-helper.service
	chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/conntrack-tray-helper.service

uninstall:
	rm -f $(addprefix $(DESTDIR),$(FILES)) $(DESTDIR)$(SYSTEMDDIR)/conntrack-tray-helper.service
	rm -f $(DESTDIR)$(SYSCONFDIR)/conntrack-tray/config.toml.new
	if cmp -s conf/conntrack-tray.toml $(DESTDIR)$(SYSCONFDIR)/conntrack-tray/config.toml; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/conntrack-tray/config.toml; \
	fi
	-rmdir $(DESTDIR)$(LIBEXECDIR)/conntrack-tray $(DESTDIR)$(SYSCONFDIR)/conntrack-tray 2>/dev/null
