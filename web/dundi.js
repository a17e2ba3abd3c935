// The DUNDi page: a public key file chosen with "Upload" is read into the key box, where it
// can be checked before saving (the server checks it again).
document.addEventListener('DOMContentLoaded', function () {
  var file = document.getElementById('key-file');
  var box = document.querySelector('#peer-form textarea[name=key]');
  if (!file || !box) { return; }
  file.addEventListener('change', function () {
    var f = file.files && file.files[0];
    if (!f) { return; }
    if (f.size > 16384) { alert('This file is too large for a public key.'); return; }
    var reader = new FileReader();
    reader.onload = function () { box.value = String(reader.result); };
    reader.readAsText(f);
  });
});
