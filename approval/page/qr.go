package page

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"

	"github.com/boombuler/barcode/qr"
)

// The enrollment page and each request page carry a QR code of their own
// public URL, so an approver who opened the link on a computer can carry on
// from a phone: scan, then tap the phone's own key (or a key held to it).
//
// The code is drawn by the server as inline SVG: the page's Content Security
// Policy (img-src 'self', no data: URLs, no inline style) stays as strict as
// it is, nothing is fetched from elsewhere, and the code is as sharp at any
// size or zoom as the camera needs.

// qrModulePixels is the drawn size of one module in CSS pixels: a whole
// number, so that every module is the same number of screen pixels and
// the code's edges stay sharp for the camera.
const qrModulePixels = 4

// qrQuietZone is the light border, in modules, that ISO/IEC 18004 asks for
// around a code; without it phone cameras miss codes on busy backgrounds.
const qrQuietZone = 4

// qrCode is what the page shows under "Continue on your phone".
type qrCode struct {
	URL string
	SVG template.HTML
	// Loopback is set when the URL names this machine (localhost): a phone
	// would reach itself, so the page says how to give the page a real name.
	Loopback bool
}

// pageQR encodes link for the page. Error correction M (15%) leaves the
// code small enough to scan from a laptop screen at a short URL's version
// (5 or 6) while tolerating glare.
func pageQR(link string) (*qrCode, error) {
	svg, err := qrSVG(link, qr.M)
	if err != nil {
		return nil, fmt.Errorf("QR code of %s: %w", link, err)
	}
	loopback := false
	if u, err := url.Parse(link); err == nil {
		h := u.Hostname()
		loopback = strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") || h == "127.0.0.1" || h == "::1"
	}
	return &qrCode{URL: link, SVG: svg, Loopback: loopback}, nil
}

// qrSVG draws content as an SVG whose user unit is one module: a white
// square with the quiet zone, and one path of the dark modules, each row's
// runs merged into one rectangle to keep the page light.
func qrSVG(content string, level qr.ErrorCorrectionLevel) (template.HTML, error) {
	code, err := qr.Encode(content, level, qr.Auto)
	if err != nil {
		return "", err
	}
	n := code.Bounds().Dx()
	size := n + 2*qrQuietZone
	dark := func(x, y int) bool {
		r, g, b, _ := code.At(x, y).RGBA()
		return r+g+b < 3*0x8000
	}
	var d strings.Builder
	for y := range n {
		for x := 0; x < n; {
			if !dark(x, y) {
				x++
				continue
			}
			run := 1
			for x+run < n && dark(x+run, y) {
				run++
			}
			fmt.Fprintf(&d, "M%d %dh%dv1h-%dz", x+qrQuietZone, y+qrQuietZone, run, run)
			x += run
		}
	}
	// Escaped for an attribute: the URL is the server's (public_url and an
	// id or token it issued), but the escaping costs nothing.
	label := template.HTMLEscapeString(content)
	return template.HTML(fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" class="qr" role="img" aria-label="QR code of %s" shape-rendering="crispEdges">`+
		`<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="%s"/></svg>`, size*qrModulePixels, size*qrModulePixels, size, size, label, size, size, d.String())), nil
}
