package page

import (
	"image"
	"image/color"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/boombuler/barcode/qr"
)

// rasterQR draws the SVG qrSVG writes (a viewBox of modules, a path of
// one-module-high runs) at scale pixels a module, for a decoder to read.
func rasterQR(t *testing.T, svg string, scale int) image.Image {
	t.Helper()
	vb := regexp.MustCompile(`viewBox="0 0 (\d+) (\d+)"`).FindStringSubmatch(svg)
	if vb == nil {
		t.Fatalf("no viewBox in %.200s", svg)
	}
	size, _ := strconv.Atoi(vb[1])
	img := image.NewGray(image.Rect(0, 0, size*scale, size*scale))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	runs := regexp.MustCompile(`M(\d+) (\d+)h(\d+)v1h-(\d+)z`).FindAllStringSubmatch(svg, -1)
	if len(runs) == 0 {
		t.Fatalf("no dark modules in %.200s", svg)
	}
	for _, r := range runs {
		x, _ := strconv.Atoi(r[1])
		y, _ := strconv.Atoi(r[2])
		n, _ := strconv.Atoi(r[3])
		for px := x * scale; px < (x+n)*scale; px++ {
			for py := y * scale; py < (y+1)*scale; py++ {
				img.SetGray(px, py, color.Gray{})
			}
		}
	}
	return img
}

// The code drawn for a page decodes, with ZXing's decoder, to exactly the
// URL it was made for, whatever shape public_url has.
func TestQRCodeDecodesToTheURL(t *testing.T) {
	for _, tc := range []struct {
		url      string
		loopback bool
	}{
		{"https://approve.example.com/requests/0a7b509e-2321-40f4-a038-a4a987ae274f", false},
		{"https://approve.local:8710/enroll/oVTw802sRMNs3kF_Qu2WgJGvfvm5yBwAP1WbVxdJQYY", false},
		{"http://localhost:8710/requests/0a7b509e-2321-40f4-a038-a4a987ae274f", true},
		{"https://countersign-approvals.treasury.eu-west-1.internal.example.org:44321/enroll/" + strings.Repeat("A", 43), false},
	} {
		q, err := pageQR(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if q.URL != tc.url || q.Loopback != tc.loopback {
			t.Errorf("%s: URL %q loopback %v, want loopback %v", tc.url, q.URL, q.Loopback, tc.loopback)
		}
		if got := decodePureQR(t, rasterQR(t, string(q.SVG), 3)); got != tc.url {
			t.Errorf("decodes to %q, want %q", got, tc.url)
		}
		if !strings.Contains(string(q.SVG), `aria-label="QR code of `+tc.url+`"`) {
			t.Errorf("%s: the code's label does not say what it holds", tc.url)
		}
	}
	if _, err := qrSVG(strings.Repeat("x", 3000), qr.M); err == nil {
		t.Error("content beyond a QR code's capacity was drawn")
	}
}
