# Installed as /etc/profile.d/deployer-jupyter.sh. Login shells (JupyterLab terminals run `bash -l`) get the
# notebook environment on PATH again after Debian's /etc/profile has reset PATH.
case ":$PATH:" in
    *:/opt/jupyter/bin:*) ;;
    *) PATH="/opt/jupyter/bin:$PATH" ;;
esac
case ":$PATH:" in
    *":$HOME/.local/bin:"*) ;;
    *) PATH="$HOME/.local/bin:$PATH" ;;
esac
export PATH
