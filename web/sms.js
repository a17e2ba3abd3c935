// The send form's counter: which encoding a text needs (GSM 7-bit or UCS-2) and how many SMS
// parts it makes, with the limits pasarela's encoder uses (160/153 septets, 70/67 UTF-16 units;
// characters of the GSM extension table count twice).
(function () {
  var basic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var ext = "\f^{}\\[~]|€";
  function count(text) {
    var septets = 0, gsm = true;
    for (var ch of text) {
      if (basic.indexOf(ch) >= 0) septets += 1;
      else if (ext.indexOf(ch) >= 0) septets += 2;
      else { gsm = false; break; }
    }
    if (gsm) return { enc: "GSM-7", parts: septets <= 160 ? 1 : Math.ceil(septets / 153) };
    var units = 0;
    for (var c of text) units += c.length;
    return { enc: "UCS-2", parts: units <= 70 ? 1 : Math.ceil(units / 67) };
  }
  var text = document.getElementById("sms-text");
  var out = document.getElementById("sms-count");
  if (!text || !out) return;
  function show() {
    var r = count(text.value);
    out.textContent = text.value.length ? r.parts + " part" + (r.parts === 1 ? "" : "s") + ", " + r.enc : "";
  }
  text.addEventListener("input", show);
  show();
})();
