//! The window's event loop: winit for the window and its input, egui-winit to turn them into
//! egui input (and to serve the clipboard, the cursor and AccessKit), and
//! `egui_software_backend`'s rasterizer drawing each frame into a shared-memory buffer
//! (softbuffer) that the display server shows as it is.
//!
//! Why not eframe: its renderers are OpenGL (glow) and wgpu. On a desktop without a GPU
//! driver — a VM, a remote session, Xvfb — Mesa's software OpenGL kept 63 MiB of LLVM and
//! driver resident, more than all the rest of the window together (119 MiB against a budget
//! of 80). A list of text rows is cheap to rasterize on the CPU, and this loop is small
//! enough to own: it draws only when egui asks (at once, or after the delay it names), so an
//! idle window sleeps in `poll` like eframe's.

use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::{Duration, Instant};

use egui::{ViewportCommand, ViewportId, ViewportInfo};
use egui_software_backend::{BufferMutRef, ColorFieldOrder, EguiSoftwareRender};
use winit::application::ApplicationHandler;
use winit::event::WindowEvent;
use winit::event_loop::{ActiveEventLoop, ControlFlow, EventLoop, EventLoopProxy};
use winit::window::{Window, WindowId};

/// The least time from one frame egui asked for to the next (60 a second).
const MIN_FRAME: Duration = Duration::from_millis(16);

/// What wakes the loop besides the window's own events.
enum Wake {
    /// egui asked for a frame (from any thread): at `when`, if no frame was drawn since.
    Repaint { when: Instant, pass: u64 },
    /// A screen reader's request.
    Access(accesskit_winit::Event),
}

impl From<accesskit_winit::Event> for Wake {
    fn from(e: accesskit_winit::Event) -> Self {
        Wake::Access(e)
    }
}

/// Opens one window described by `viewport` and calls `ui` for every frame until the window
/// is closed (by the window manager or by a `ViewportCommand::Close`). `ui` is made by
/// `make` before the window exists, with the context other threads may wake.
pub fn run<F: FnMut(&egui::Context)>(
    viewport: egui::ViewportBuilder,
    make: impl FnOnce(&egui::Context) -> F,
) -> anyhow::Result<()> {
    let mut builder = EventLoop::<Wake>::with_user_event();
    // X11 where there is one (XWayland too): there the window manager draws the title bar,
    // which winit on Wayland leaves to the application (GNOME has none to lend).
    if std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty()) {
        use winit::platform::x11::EventLoopBuilderExtX11;
        builder.with_x11();
    }
    let event_loop = builder.build()?;
    let ctx = egui::Context::default();
    let proxy = event_loop.create_proxy();
    let waker = proxy.clone();
    ctx.set_request_repaint_callback(move |info| {
        // A delay of "never" (Duration::MAX) would overflow the clock: no frame then.
        if let Some(when) = Instant::now().checked_add(info.delay) {
            let _ = waker.send_event(Wake::Repaint {
                when,
                pass: info.current_cumulative_pass_nr,
            });
        }
    });
    let ui = make(&ctx);
    let mut runner = Runner {
        live: None,
        softbuffer: softbuffer::Context::new(event_loop.owned_display_handle())
            .map_err(|e| anyhow::anyhow!("no display buffer: {e}"))?,
        renderer: EguiSoftwareRender::new(ColorFieldOrder::Bgra),
        info: ViewportInfo::default(),
        next_frame: None,
        last_frame: None,
        shown: false,
        drawn_size: None,
        error: None,
        viewport,
        proxy,
        ui,
        ctx,
    };
    event_loop.run_app(&mut runner)?;
    match runner.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The open window. Fields drop in order: the surface and egui-winit's clipboard before the
/// window they belong to (Wayland's clipboard crashes otherwise).
struct Live {
    surface: softbuffer::Surface<winit::event_loop::OwnedDisplayHandle, Rc<Window>>,
    input: egui_winit::State,
    window: Rc<Window>,
}

struct Runner<F> {
    live: Option<Live>,
    softbuffer: softbuffer::Context<winit::event_loop::OwnedDisplayHandle>,
    renderer: EguiSoftwareRender,
    info: ViewportInfo,
    /// When egui wants its next frame, if it named a time.
    next_frame: Option<Instant>,
    /// When the last frame was started.
    last_frame: Option<Instant>,
    /// Whether the window was made visible (after its first frame was drawn).
    shown: bool,
    /// The size of the last frame drawn.
    drawn_size: Option<winit::dpi::PhysicalSize<u32>>,
    error: Option<anyhow::Error>,
    viewport: egui::ViewportBuilder,
    proxy: EventLoopProxy<Wake>,
    ui: F,
    ctx: egui::Context,
}

impl<F: FnMut(&egui::Context)> Runner<F> {
    fn open(&mut self, el: &ActiveEventLoop) -> anyhow::Result<()> {
        // Hidden until the first frame is drawn: AccessKit's adapter must exist before the
        // window is first shown, and no empty frame flashes.
        let hidden = self.viewport.clone().with_visible(false);
        let mut attributes = egui_winit::create_winit_window_attributes(&self.ctx, hidden.clone());
        if let Some(id) = &hidden.app_id {
            // egui-winit leaves WM_CLASS's instance part empty; both name the desktop file.
            use winit::platform::x11::WindowAttributesExtX11;
            attributes = attributes.with_name(id, id);
        }
        let window = Rc::new(el.create_window(attributes)?);
        egui_winit::apply_viewport_builder_to_window(&self.ctx, &window, &hidden);
        let surface = softbuffer::Surface::new(&self.softbuffer, window.clone())
            .map_err(|e| anyhow::anyhow!("no buffer for the window: {e}"))?;
        let mut input = egui_winit::State::new(
            self.ctx.clone(),
            ViewportId::ROOT,
            el,
            Some(window.scale_factor() as f32),
            window.theme(),
            None,
        );
        input.init_accesskit(el, &window, self.proxy.clone());
        viewport_info(&mut self.info, &window);
        window.request_redraw();
        self.live = Some(Live {
            surface,
            input,
            window,
        });
        Ok(())
    }

    /// Draws one frame; false once the window asked to close.
    fn frame(&mut self) -> anyhow::Result<bool> {
        let Some(live) = self.live.as_mut() else {
            return Ok(true);
        };
        let window = &live.window;
        let started = Instant::now();
        self.last_frame = Some(started);
        // This frame serves every request made so far.
        self.next_frame = None;
        viewport_info(&mut self.info, window);
        let mut raw = live.input.take_egui_input(window);
        raw.viewports.insert(ViewportId::ROOT, self.info.clone());
        self.info.events.clear();
        let ui = &mut self.ui;
        let out = self.ctx.run(raw, |ctx| ui(ctx));
        live.input
            .handle_platform_output(window, out.platform_output);
        let mut delay = Duration::MAX;
        if let Some(vo) = out.viewport_output.get(&ViewportId::ROOT) {
            if vo
                .commands
                .iter()
                .any(|c| matches!(c, ViewportCommand::Close))
            {
                return Ok(false);
            }
            let mut actions = Vec::new();
            egui_winit::process_viewport_commands(
                &self.ctx,
                &mut self.info,
                vo.commands.iter().cloned(),
                window,
                &mut actions,
            );
            delay = vo.repaint_delay;
        }
        let shapes = self.ctx.tessellate(out.shapes, out.pixels_per_point);
        let size = window.inner_size();
        let (w, h) = (
            NonZeroU32::new(size.width).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::new(size.height).unwrap_or(NonZeroU32::MIN),
        );
        live.surface
            .resize(w, h)
            .map_err(|e| anyhow::anyhow!("cannot size the window's buffer: {e}"))?;
        let mut buffer = live
            .surface
            .buffer_mut()
            .map_err(|e| anyhow::anyhow!("no window buffer: {e}"))?;
        // What no panel covers (a window smaller than its least size, with no window manager
        // to hold it) is the panels' colour, not black.
        let [r, g, b, _] = self.ctx.style().visuals.panel_fill.to_array();
        buffer.fill(u32::from_be_bytes([0, r, g, b]));
        let mut target = BufferMutRef::new(
            bytemuck::cast_slice_mut(&mut buffer),
            w.get() as usize,
            h.get() as usize,
        );
        self.renderer.render(
            &mut target,
            &shapes,
            &out.textures_delta,
            out.pixels_per_point,
        );
        buffer
            .present()
            .map_err(|e| anyhow::anyhow!("cannot show the frame: {e}"))?;
        if !self.shown {
            window.set_visible(true);
            self.shown = true;
        }
        // egui lays the panels out from the last frame's sizes: after a resize the first
        // frame is partly of the old layout, and nothing else would ask for a second.
        let resized = self.drawn_size != Some(size);
        self.drawn_size = Some(size);
        if resized {
            window.request_redraw();
        } else if delay.is_zero() {
            // An animation (a smooth scroll, a fold): paced by `schedule`.
            self.schedule(started);
        } else if let Some(at) = Instant::now().checked_add(delay) {
            self.schedule(at);
        }
        Ok(true)
    }

    /// Asks for a frame at `at`, but not sooner than [`MIN_FRAME`] after the last one: egui
    /// asks for its next animation frame at once, and nothing else (no vsync, as a GL swap
    /// has) would hold that back from taking a whole core.
    fn schedule(&mut self, at: Instant) {
        let at = self.last_frame.map_or(at, |l| at.max(l + MIN_FRAME));
        self.next_frame = Some(self.next_frame.map_or(at, |t| t.min(at)));
    }

    fn redraw(&self) {
        if let Some(live) = &self.live {
            live.window.request_redraw();
        }
    }

    fn fail(&mut self, el: &ActiveEventLoop, e: anyhow::Error) {
        self.error = Some(e);
        el.exit();
    }
}

/// What egui is told of the window each frame: its scale and state, from what winit keeps.
/// Not its position (egui-winit's `update_viewport_info` asks the X server for it, and
/// panics when the window was destroyed from outside before its `Destroyed` arrived; the
/// layout needs only the size, which the input carries).
fn viewport_info(info: &mut ViewportInfo, window: &Window) {
    info.native_pixels_per_point = Some(window.scale_factor() as f32);
    info.focused = Some(window.has_focus());
    info.minimized = window.is_minimized();
    info.maximized = Some(window.is_maximized());
}

impl<F: FnMut(&egui::Context)> ApplicationHandler<Wake> for Runner<F> {
    fn resumed(&mut self, el: &ActiveEventLoop) {
        if self.live.is_none() {
            if let Err(e) = self.open(el) {
                self.fail(el, e);
            }
        }
    }

    fn user_event(&mut self, _el: &ActiveEventLoop, wake: Wake) {
        match wake {
            Wake::Repaint { when, pass } => {
                // A request made before the last frame was drawn is already served.
                let now = self.ctx.cumulative_pass_nr_for(ViewportId::ROOT);
                if now == pass || now == pass + 1 {
                    self.schedule(when);
                }
            }
            Wake::Access(e) => match e.window_event {
                accesskit_winit::WindowEvent::InitialTreeRequested => {
                    self.ctx.enable_accesskit();
                    self.redraw();
                }
                accesskit_winit::WindowEvent::ActionRequested(request) => {
                    if let Some(live) = self.live.as_mut() {
                        live.input.on_accesskit_action_request(request);
                    }
                    self.redraw();
                }
                accesskit_winit::WindowEvent::AccessibilityDeactivated => {}
            },
        }
    }

    fn window_event(&mut self, el: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        match event {
            // Closed by the window manager, or destroyed from outside (`xdotool windowclose`):
            // a frame drawn on a destroyed window would fail.
            WindowEvent::CloseRequested | WindowEvent::Destroyed => el.exit(),
            WindowEvent::RedrawRequested => {
                // winit's X11 calls unwrap the server's replies: on a window destroyed from
                // outside (`xdotool windowclose`, not a close) the frame drawn before its
                // `Destroyed` arrives panics in there. The loop ends with an error, as for a
                // panic in the window's own code, instead of unwinding through winit.
                let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.frame()));
                match drawn {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => el.exit(),
                    Ok(Err(e)) => self.fail(el, e),
                    Err(_) => self.fail(
                        el,
                        anyhow::anyhow!("a frame failed (was the window destroyed from outside?)"),
                    ),
                }
            }
            event => {
                if let Some(live) = self.live.as_mut() {
                    if live.input.on_window_event(&live.window, &event).repaint {
                        live.window.request_redraw();
                    }
                }
            }
        }
    }

    /// The window, its surface and its clipboard go while the event loop (and its display
    /// connection) is still there.
    fn exiting(&mut self, _el: &ActiveEventLoop) {
        self.live = None;
    }

    fn about_to_wait(&mut self, el: &ActiveEventLoop) {
        match self.next_frame {
            Some(at) if at <= Instant::now() => {
                self.next_frame = None;
                self.redraw();
                el.set_control_flow(ControlFlow::Wait);
            }
            Some(at) => el.set_control_flow(ControlFlow::WaitUntil(at)),
            None => el.set_control_flow(ControlFlow::Wait),
        }
    }
}
