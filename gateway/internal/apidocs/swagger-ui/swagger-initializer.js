// Meshplane's Swagger UI set-up. The spec comes from this gateway, relative to
// /docs/, and "Try it out" calls the API where this page was loaded from: same
// scheme (http or https) and, behind a path-prefixing proxy, same prefix.
// No online validator: nothing is fetched from outside the gateway.
window.onload = function () {
  fetch("../openapi.json")
    .then(function (resp) {
      if (!resp.ok) throw new Error("GET ../openapi.json: HTTP " + resp.status);
      return resp.json();
    })
    .then(function (spec) {
      spec.schemes = [window.location.protocol.replace(":", "")];
      spec.basePath = window.location.pathname.replace(/\/docs\/(index\.html)?$/, "") || "/";
      window.ui = SwaggerUIBundle({
        spec: spec,
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout",
      });
    })
    .catch(function (err) {
      document.getElementById("swagger-ui").textContent = "Could not load the API description: " + err;
    });
};
