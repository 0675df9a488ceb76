# Installed as /etc/profile.d/deployer-jupyter.sh. Login shells (JupyterLab terminals run `bash -l`) get the
# notebook environment on PATH again after Debian's /etc/profile has reset PATH. Terminals inherit
# the CA bundle variables from the server; a login shell started beside it (`docker exec ... bash -l`)
# gets them here when the entrypoint has made the bundle.
case ":$PATH:" in
    *:/opt/jupyter/bin:*) ;;
    *) PATH="/opt/jupyter/bin:$PATH" ;;
esac
case ":$PATH:" in
    *":$HOME/.local/bin:"*) ;;
    *) PATH="$HOME/.local/bin:$PATH" ;;
esac
export PATH
if [ -n "${DEPLOYER_CA_BUNDLE:-}" ] && [ -z "${REQUESTS_CA_BUNDLE:-}" ] && [ -r "$DEPLOYER_CA_BUNDLE" ]; then
    export REQUESTS_CA_BUNDLE="$DEPLOYER_CA_BUNDLE" SSL_CERT_FILE="$DEPLOYER_CA_BUNDLE" CURL_CA_BUNDLE="$DEPLOYER_CA_BUNDLE"
    [ -z "${DEPLOYER_TENANT_CA:-}" ] || export NODE_EXTRA_CA_CERTS="$DEPLOYER_TENANT_CA"
fi
