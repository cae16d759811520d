// The API page: Swagger UI (the files BentoML ships) rendering this server's own /docs.json. Nothing is fetched from
// another host; the Content-Security-Policy the server sends with this page forbids it.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the default validator is a web service elsewhere: never called
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
