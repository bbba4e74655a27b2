// Starts Swagger UI on /docs. A file of its own rather than an inline script, so the page's
// Content-Security-Policy can stay `script-src 'self'` (api/edge.py).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
